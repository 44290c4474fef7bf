"""Running a fitted model: plan, llama.cpp glue, sessions, serve, bench, history."""
