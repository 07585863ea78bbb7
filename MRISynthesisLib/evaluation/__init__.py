"""Research tools on top of the engine: evaluation over many cases, tables and plots in the
paper's layout, the montage figure and the demo case."""
