"""The unified image agent: one machine image, every service, configured from its tags.

Kept import-free on purpose: `agent status` starts on every call, and importing boto3,
jinja2 or jsonschema here would cost it hundreds of milliseconds.
"""

__version__ = "0.1.0"
