"""One run, split the way the paper's training is: the objective, the train state, the batches, the loop,
evaluation, checkpoints, and the run that orchestrates them (`protobench.training.run.Run`)."""
