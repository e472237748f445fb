"""Control: where the objects go. Layouts, an attention probe, training-free latent guidance
(box guidance, Attend-and-Excite) and a ControlNet on a frozen base."""
