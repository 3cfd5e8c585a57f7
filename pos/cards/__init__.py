"""Mock wallet cards for testers: issue, load, clone, describe, and tap them on a running terminal."""
