"""Reports on finished runs for people comparing experiments: the self-contained HTML report
(html_report.py) and the W&B Report (wandb_report.py, with the ``zoo[reports]`` extra).

Reads run folders and reloads their models through training; imports anything but the command line.
"""
