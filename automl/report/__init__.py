"""Reports and label audits: plotly figures of a study, and the labels its out-of-fold predictions contradict."""
