"""Resource-specific presentation for the CLI: one module per resource.

Each module turns JSON-decoded REST bodies into the text, table and manifest
layouts of docs/pool-contract.md §11 and docs/cli.md. Pure functions only (no HTTP, no click); the
command modules under ``otherix.cli.commands`` call them and print the result.
"""
