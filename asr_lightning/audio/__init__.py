"""audio package."""
