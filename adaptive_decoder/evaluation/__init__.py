"""The evaluation harness: config, units, scale-free statistics, results schema, report rendering."""
