"""Research tools on top of the engine: evaluation over many cases, tables and plots in the
paper's layout, the montage figure and the demo case.

Modules: :mod:`.cases` (finding and evaluating cases), :mod:`.rows` (the rows' stages and the
paper's order), :mod:`.tables` (CSV, Markdown and console tables), :mod:`.plots` (box plots),
:mod:`.writing` (an evaluation's files), :mod:`.montage` and :mod:`.demo_case`.
"""
