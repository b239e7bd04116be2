"""Returns submissions: readers, the batch engine, and the queue."""
