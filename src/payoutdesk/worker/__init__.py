"""Workers: claim queued submissions and run them; the scheduler of periodic jobs."""
