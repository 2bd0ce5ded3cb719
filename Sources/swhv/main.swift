print("swhv")
