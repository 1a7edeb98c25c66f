"""Where data lives when it is not on this machine's disk: object storage (S3, GCS, Azure) by URL.

`urls` opens a bucket URL through fsspec (s3fs, gcsfs, adlfs) and turns its errors into one-line
messages; `mirror` gives the stages a local working copy of a remote data dir or run store and
publishes it back (files first, pointers last) under a lock made of the store's conditional writes.
Sources in a bucket are read where they are, by mmpipe.ingest.bucket. The stages themselves only
ever see local paths.
"""
