"""skybuffer: Bluesky Jetstream -> Redis Streams buffer -> hive-partitioned Parquet lake."""

__version__ = "0.1.0"
