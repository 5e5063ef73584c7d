"""One module per DVC stage, each with main(argv); pipelines/<stage>.py calls it."""
