"""mmpipe: raw text + image data in, clean versioned Parquet shards out (and, later, a trained model).

The core library never imports Prefect; flows/ wires these functions into Prefect flows.
"""

__version__ = "0.1.0"
