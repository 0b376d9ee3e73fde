"""Platform adapters: each turns platform updates into core commands and core events into platform output."""
