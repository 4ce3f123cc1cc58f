"""The stages pipelines share, one module each: `views` (generated views), `fit` (the engine on
saved views), `distill` (score distillation into a field), `export` (meshes, point cloud,
turntable, renders), `reload` (a finished stage's model from its checkpoint); `costs` holds the
measured costs behind their estimates and `resources` what every stage sets up (prior, threads)."""
