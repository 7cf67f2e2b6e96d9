"""The Agora Cloud Recording RESTful API as a dialect of cloudrec (issue 16): acquire, start,
query and stop under ``/v1/apps/{appid}/cloud_recording/``.  Vendor words live here only."""
