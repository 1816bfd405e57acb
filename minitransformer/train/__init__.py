"""minitransformer.train"""
