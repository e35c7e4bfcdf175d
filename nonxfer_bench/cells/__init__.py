"""The benchmark's output: typed cells, the values that identify a release and an attack step, the cell store and
the cells file of a results folder."""
