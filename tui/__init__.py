"""rigdeck's face: Textual panes and the CLI. Draws and dispatches; owns no domain logic."""
