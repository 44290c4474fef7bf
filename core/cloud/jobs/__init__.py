"""Jobs: a TOML spec run detached on a rented GPU or this machine, its log and its state."""
