"""Ray jobs built on the ``smec`` library: embedding ETL (Ray Data), training (Ray Train)."""
