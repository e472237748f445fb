"""Data: the procedural shapes world, sklearn digits, and users' image folders."""
