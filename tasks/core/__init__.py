"""The shared core every area builds on: config, paths and file names, errors, environment, hashing, tracking,
the one split reader, the one device resolver and the one tokenizer loader. Imports nothing above it."""
