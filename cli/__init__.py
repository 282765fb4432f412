"""The `fredset` command line: parsing and printing over the fredset library."""
