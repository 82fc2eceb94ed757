"""Built-in objectives, one file each; registered through the `lmbench.objectives` entry points."""
