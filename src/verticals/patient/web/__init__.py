"""The patient assistant's web page and API (`verticals patient serve`)."""

from verticals.patient.web.app import WebSettings, create_app

__all__ = ["WebSettings", "create_app"]
