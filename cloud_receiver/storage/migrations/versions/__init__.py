"""One module per schema revision, oldest first (``rNNNN_*.py``); never edited once released."""
