"""Will it run here, and how: settings, budget, layout, speed, explanations, reports."""
