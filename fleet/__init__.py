"""`unified`: the operator's side of the unified image. Deploys images to staging and
production as verified blue/green swaps, rolls back, and shows what runs.

Kept import-free, like the agent's package: every command imports what it needs.
"""
