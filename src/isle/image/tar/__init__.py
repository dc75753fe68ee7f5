"""Layer tars: stream (read), unpack, pack (write), apply (copy fallback), whiteout, placement."""
