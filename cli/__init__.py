"""raftkv_cli: the raftkv command line."""
