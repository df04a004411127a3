"""Tests of the published contract: the OpenAPI document, response validation, parity mode."""
