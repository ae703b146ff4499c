"""Claims engine: verdicts on green claims from anchored meter data."""
