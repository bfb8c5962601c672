"""``python -m store soak``: a fault-injection soak of the store's promise that nothing
acknowledged is lost and nothing is written twice."""
