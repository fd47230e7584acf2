"""The unified image agent: one machine image, every service, configured from its tags.

Kept import-free on purpose: the program launcher (`agent.launch`) and `agent status`
start on every call, and importing boto3 or jinja2 here would cost them hundreds of ms.
"""

__version__ = "0.1.0"
