"""The OpenSSH backend (`ssh_backend = "openssh"`): the system `ssh` does every login.

For users whose best login is the one OpenSSH already makes: a ControlMaster opened in the
morning, Kerberos/GSSAPI, FIDO2 keys (sk-ssh-ed25519), OpenSSH certificates from a site tool,
`Match exec`, PKCS#11. Their whole ssh config applies; hpcnb adds only the cluster's explicit
values, a ControlMaster of its own when they have none (so one command makes one login, and
later commands make none), and strict host keys.

    options.py   pure: the ssh options hpcnb adds, `ssh -G` parsed, errors classified
    remote.py    OpenSSHRemote: the Remote protocol (run, read_file) and tunnels over `ssh`
    forward.py   a tunnel: `ssh -O forward` on the master, or an `ssh -N` of its own
"""
