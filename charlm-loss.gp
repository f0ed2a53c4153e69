reset
set terminal svg size 1100,1000 dynamic enhanced font 'Sans,13' background rgb 'white'
set output 'charlm-loss.svg'
set datafile missing 'NaN'
set multiplot layout 2,1 title 'charlm: loss per character (nats), the same data and start for every run' font ',15'
set grid lc rgb '#dddddd'
set key inside top right box opaque samplen 4 spacing 1.15 font ',11'
set xlabel 'optimizer step (256 characters each)'
set yrange [2.24758:3.469324]
set ylabel 'validation loss (held-out text)'
plot '/work/main/charlm-loss.dat' index 0 using 1:4 with lines lc rgb '#0072B2' lw 2 dt 1 notitle, \
     '/work/main/charlm-loss.dat' index 0 using 1:(int($0) % 10 == 0 ? $4 : NaN) with points lc rgb '#0072B2' pt 4 ps 1.3 lw 2 notitle, \
     keyentry with linespoints lc rgb '#0072B2' lw 2 dt 1 pt 4 ps 1.3 title 'adamw', \
     '/work/main/charlm-loss.dat' index 1 using 1:4 with lines lc rgb '#D55E00' lw 2 dt 1 notitle, \
     '/work/main/charlm-loss.dat' index 1 using 1:(int($0) % 10 == 0 ? $4 : NaN) with points lc rgb '#D55E00' pt 4 ps 1.3 lw 2 notitle, \
     keyentry with linespoints lc rgb '#D55E00' lw 2 dt 1 pt 4 ps 1.3 title 'came', \
     3.319324 with lines dt 3 lw 2 lc rgb '#777777' title 'unigram entropy (no context)'
set ylabel 'training loss (mean of the batches since the last point)'
plot '/work/main/charlm-loss.dat' index 0 using 1:3 with lines lc rgb '#0072B2' lw 2 dt 1 notitle, \
     '/work/main/charlm-loss.dat' index 0 using 1:(int($0) % 10 == 0 ? $3 : NaN) with points lc rgb '#0072B2' pt 4 ps 1.3 lw 2 notitle, \
     keyentry with linespoints lc rgb '#0072B2' lw 2 dt 1 pt 4 ps 1.3 title 'adamw', \
     '/work/main/charlm-loss.dat' index 1 using 1:3 with lines lc rgb '#D55E00' lw 2 dt 1 notitle, \
     '/work/main/charlm-loss.dat' index 1 using 1:(int($0) % 10 == 0 ? $3 : NaN) with points lc rgb '#D55E00' pt 4 ps 1.3 lw 2 notitle, \
     keyentry with linespoints lc rgb '#D55E00' lw 2 dt 1 pt 4 ps 1.3 title 'came', \
     3.319324 with lines dt 3 lw 2 lc rgb '#777777' title 'unigram entropy (no context)'
unset multiplot

unset output
reset
set terminal pngcairo size 1100,1000 enhanced font 'Sans,11' background rgb 'white'
set output 'charlm-loss.png'
set datafile missing 'NaN'
set multiplot layout 2,1 title 'charlm: loss per character (nats), the same data and start for every run' font ',15'
set grid lc rgb '#dddddd'
set key inside top right box opaque samplen 4 spacing 1.15 font ',11'
set xlabel 'optimizer step (256 characters each)'
set yrange [2.24758:3.469324]
set ylabel 'validation loss (held-out text)'
plot '/work/main/charlm-loss.dat' index 0 using 1:4 with lines lc rgb '#0072B2' lw 2 dt 1 notitle, \
     '/work/main/charlm-loss.dat' index 0 using 1:(int($0) % 10 == 0 ? $4 : NaN) with points lc rgb '#0072B2' pt 4 ps 1.3 lw 2 notitle, \
     keyentry with linespoints lc rgb '#0072B2' lw 2 dt 1 pt 4 ps 1.3 title 'adamw', \
     '/work/main/charlm-loss.dat' index 1 using 1:4 with lines lc rgb '#D55E00' lw 2 dt 1 notitle, \
     '/work/main/charlm-loss.dat' index 1 using 1:(int($0) % 10 == 0 ? $4 : NaN) with points lc rgb '#D55E00' pt 4 ps 1.3 lw 2 notitle, \
     keyentry with linespoints lc rgb '#D55E00' lw 2 dt 1 pt 4 ps 1.3 title 'came', \
     3.319324 with lines dt 3 lw 2 lc rgb '#777777' title 'unigram entropy (no context)'
set ylabel 'training loss (mean of the batches since the last point)'
plot '/work/main/charlm-loss.dat' index 0 using 1:3 with lines lc rgb '#0072B2' lw 2 dt 1 notitle, \
     '/work/main/charlm-loss.dat' index 0 using 1:(int($0) % 10 == 0 ? $3 : NaN) with points lc rgb '#0072B2' pt 4 ps 1.3 lw 2 notitle, \
     keyentry with linespoints lc rgb '#0072B2' lw 2 dt 1 pt 4 ps 1.3 title 'adamw', \
     '/work/main/charlm-loss.dat' index 1 using 1:3 with lines lc rgb '#D55E00' lw 2 dt 1 notitle, \
     '/work/main/charlm-loss.dat' index 1 using 1:(int($0) % 10 == 0 ? $3 : NaN) with points lc rgb '#D55E00' pt 4 ps 1.3 lw 2 notitle, \
     keyentry with linespoints lc rgb '#D55E00' lw 2 dt 1 pt 4 ps 1.3 title 'came', \
     3.319324 with lines dt 3 lw 2 lc rgb '#777777' title 'unigram entropy (no context)'
unset multiplot

unset output
