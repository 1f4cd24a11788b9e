"""Image sources: every data set behind one `ImageSource` interface (`base.py`) read by index
arrays, one module per format. Configs name a source by its module path (`_target_`), so a new
format is a module here and a file in conf/dataset/, nothing else."""
