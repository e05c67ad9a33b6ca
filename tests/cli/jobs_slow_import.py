"""A handler module that takes long to import: a stop can arrive meanwhile."""

import time

print("importing", flush=True)
time.sleep(60)
