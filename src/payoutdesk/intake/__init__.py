"""The intake channels of DESIGN §3: our FTP and SMTP servers, pulls from the brand's servers, Salesforce.

Every channel does only three things (DESIGN §5): check who sent the file, store its bytes
(``submissions.files.store_stream``), queue a submission with its channel (``common.take_file``); the
worker parses and applies. docs/CHANNELS.md describes each channel for a brand.
"""
