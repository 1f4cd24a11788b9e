"""Lightning callbacks, one module each: representation monitors, probe figures, the loss trace
for results.json, and the checkpoint written when the job is told to stop."""
