"""The control store: railnet's client of etcd and the roles it sets up there."""
