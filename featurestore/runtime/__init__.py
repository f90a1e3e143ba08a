"""Run a plan: decode events, update the online and offline stores, checkpoint offsets."""

from featurestore.runtime.applier import ProcessorStats
from featurestore.runtime.decode import DeadLetter, Decoder
from featurestore.runtime.processor import StreamProcessor, run_following

__all__ = ["DeadLetter", "Decoder", "ProcessorStats", "StreamProcessor", "run_following"]
