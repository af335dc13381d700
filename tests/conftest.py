"""Root conftest: eventlet must patch the standard library before anything
imports socket, threading or ssl (nameko's containers are eventlet greenthreads)."""
import eventlet

eventlet.monkey_patch()
