"""A tiny example stack for the unified image: an orders API (PostgreSQL), a worker
(jobs from Redis, results to PostgreSQL) and a storefront that calls the API.

Twelve-factor style: every setting comes from the environment (PORT, DATABASE_URL,
REDIS_URL, API_URL), exactly as the agent provides it.
"""
