"""What a launch records before it grants anything, and how each record is undone."""
