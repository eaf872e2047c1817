"""Who may do what through the control socket: admins everything, apps what their grants allow.

`grants.py` holds the rules (pure), `credentials.py` asks the kernel and the user database who a
client is; `control/access.py` applies both to each connection.
"""
