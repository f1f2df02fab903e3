"""Reports on finished runs for people comparing experiments (the self-contained HTML report).

Reads run folders and reloads their models through training; imports anything but the command line.
"""
