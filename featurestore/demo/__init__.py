"""The payments demo: realistic event generator and the end-to-end walkthrough."""

from featurestore.demo.events import DemoEvent, payment_events, produce_records

__all__ = ["DemoEvent", "payment_events", "produce_records"]
