"""Test support: real servers, databases and processes for the suites."""
