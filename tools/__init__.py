"""Developer tools: the python-ESL build, the demo."""
