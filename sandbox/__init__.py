"""Runnable fakes of the Pipedrive and Brevo APIs, for tests, benchmarks and the demo.

The fakes themselves are built in issue 3; this package reserves their home.
"""
